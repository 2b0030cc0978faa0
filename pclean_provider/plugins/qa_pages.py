"""The HTML of the plugin's QA index pages: plain pages, no script, every outside text escaped.

Names of MSs, targets and folders come from the landing area, so nothing here trusts them; the
pages carry a Content-Security-Policy without scripts (qa_app.py) as a second line of defence.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from datetime import datetime

from pclean_provider.pipeline.night_index import Night, NightProduct
from pclean_provider.pipeline.qa_models import BAND_COLOURS

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1d1d1f; }
h1 { font-size: 1.35rem; margin: 0 0 .3rem; } h2 { font-size: 1.1rem; margin: 1.4rem 0 .4rem; }
.crumbs { font-size: .9rem; margin-bottom: 1rem; } .crumbs a { color: #2c5aa0; }
.sub { color: #555; font-size: .9rem; margin-bottom: .8rem; }
table { border-collapse: collapse; font-size: .92rem; }
th, td { border-bottom: 1px solid #ddd; padding: .35rem .7rem; text-align: left; vertical-align: top; }
th { background: #f4f4f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.band { border-radius: .6rem; padding: .05rem .5rem; font-weight: 600; }
.none { color: #777; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _link(url: str, text: str) -> str:
    return f"<a href='{_e(url)}'>{_e(text)}</a>"


def _band(band: str | None, text: str | None = None) -> str:
    if band not in BAND_COLOURS:
        return f"<span class='none'>{_e(text or band or '-')}</span>"
    fg, bg = BAND_COLOURS[band]
    return f"<span class='band' style='color:{fg};background:{bg}'>{_e(text or band)}</span>"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def page(title: str, crumbs: Sequence[tuple[str, str]], body: Sequence[str]) -> str:
    trail = " / ".join(_link(url, text) for text, url in crumbs)
    return "\n".join([
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<div class='crumbs'>{trail}</div>" if crumbs else "",
        f"<h1>{_e(title)}</h1>",
        *body,
        "</body></html>",
    ])


def overview_page(pipelines: Sequence[tuple[str, str, str, Sequence[Night]]],
                  night_url: Callable[[str, str], str]) -> str:
    """``pipelines``: (dag_id, title, pipeline page URL, its newest nights)."""
    if not pipelines:
        return page("pclean QA", [], ["<p>No pipeline that you may see.</p>"])
    rows = []
    for dag_id, title, url, nights in pipelines:
        latest = nights[0] if nights else None
        rows.append(
            f"<tr><td>{_link(url, dag_id)}</td><td>{_e(title)}</td><td class='num'>{len(nights)}</td>"
            + (f"<td>{_link(night_url(dag_id, latest.folder), latest.folder)}</td>"
               f"<td>{_when(latest.modified)}</td>"
               if latest else "<td class='none'>no night yet</td><td></td>")
            + "</tr>")
    return page("pclean QA", [], [
        "<div class='sub'>The QA reports of every night the pipelines imaged, read from their run "
        "folders.</div>",
        "<table><tr><th>pipeline</th><th>title</th><th>nights</th><th>latest night</th><th>changed</th></tr>",
        *rows, "</table>"])


def pipeline_page(dag_id: str, title: str, nights: Sequence[Night], overview: str,
                  night_url: Callable[[str, str], str]) -> str:
    rows = [f"<tr><td>{_link(night_url(dag_id, n.folder), n.folder)}</td><td>{_when(n.modified)}</td>"
            f"<td class='num'>{n.products}</td></tr>" for n in nights]
    body = [f"<div class='sub'>{_e(title)}</div>"]
    if rows:
        body += ["<table><tr><th>night (run folder)</th><th>changed</th><th>products with QA</th></tr>",
                 *rows, "</table>"]
    else:
        body.append("<p>No night in this pipeline's work area yet.</p>")
    return page(f"QA of {dag_id}", [("pclean QA", overview)], body)


def _gate_cell(p: NightProduct) -> str:
    if p.route is None:
        return "<span class='none'>not decided</span>"
    band = "optimal" if p.route == "archive" else "warning"
    limit = f" (gate {p.gate:.2f})" if p.gate is not None else ""
    return _band(band, f"{p.route}{limit}")


def night_page(dag_id: str, folder: str, products: Sequence[NightProduct], crumbs: Sequence[tuple[str, str]],
               file_url: Callable[[str], str], json_url: str) -> str:
    rows = []
    for p in products:
        score = f"{p.score:.2f}" if p.score is not None else "-"
        reports = [_link(file_url(str(p.qa_html)), "qa.html")] if p.qa_html else []
        reports.append(_link(file_url(str(p.qa_json)), "qa.json"))
        note = p.problem or (f"not judged: {p.not_judged}" if p.not_judged else "")
        rows.append(
            f"<tr><td>{_e(p.label)}</td><td>{_e(p.product)}</td><td>{_e(p.kind or '-')}</td>"
            f"<td class='num'>{score}</td><td>{_band(p.band)}</td><td>{_gate_cell(p)}</td>"
            f"<td>{' '.join(reports)}</td><td>{_e(note)}</td></tr>")
    body = [f"<div class='sub'>{len(products)} product(s) with a QA report &middot; "
            f"{_link(json_url, 'index.json')}</div>"]
    if rows:
        body += ["<table><tr><th>MS / target</th><th>folder</th><th>kind</th><th>score</th><th>band</th>"
                 "<th>QA gate</th><th>report</th><th>note</th></tr>", *rows, "</table>"]
    else:
        body.append("<p>No QA report in this night yet.</p>")
    return page(f"{dag_id}: night {folder}", crumbs, body)
