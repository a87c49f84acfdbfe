"""The frame every admin page shares (head, navigation, flash messages) and its style
sheet.  Phones: a viewport meta tag, one column below 40em, tables that turn into
stacked cards, and form controls big enough to tap."""

from __future__ import annotations

from typing import Any

from twisted.web.template import Tag, tags

NAV = (("", "Dashboard"), ("accounts", "Accounts"), ("aliases", "Aliases"), ("queue", "Queue"), ("dns", "DNS"))

CSS = b"""
*{box-sizing:border-box}
body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;background:#f4f6f9}
header{background:#1f3b5c;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;align-items:center;gap:.4rem 1rem}
header .brand{font-weight:600;margin-right:auto}
header nav{display:flex;flex-wrap:wrap;gap:.25rem}
header nav a{color:#dfe9f5;text-decoration:none;padding:.35rem .6rem;border-radius:.3rem}
header nav a.on,header nav a:hover{background:#2f5784;color:#fff}
header form{margin:0}
header button{background:transparent;color:#dfe9f5;border:1px solid #6f8fb3;padding:.3rem .6rem}
main{max-width:64rem;margin:0 auto;padding:1rem}
h1{font-size:1.4rem;margin:.2rem 0 1rem}
h2{font-size:1.1rem;margin:1.4rem 0 .6rem}
.flash{background:#e3f4e6;border:1px solid #7cc08a;padding:.5rem .8rem;border-radius:.3rem;margin-bottom:1rem}
.flash.error{background:#fde8e8;border-color:#e08b8b}
.note{color:#5a6472;font-size:.92rem}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(9.5rem,1fr));gap:.7rem}
.card{background:#fff;border:1px solid #d9dee6;border-radius:.45rem;padding:.7rem .8rem}
.card .n{font-size:1.7rem;font-weight:600}
.card .l{color:#5a6472;font-size:.9rem}
.card.warn .n{color:#b25400}
table{width:100%;border-collapse:collapse;background:#fff;border:1px solid #d9dee6;border-radius:.45rem}
th,td{text-align:left;padding:.5rem .6rem;border-bottom:1px solid #e7ebf0;vertical-align:top}
th{background:#eef1f5;font-weight:600;font-size:.92rem}
td code,td.v{word-break:break-all}
.ok{color:#17803d;font-weight:600}.missing,.differs,.bad{color:#b42318;font-weight:600}.unknown{color:#8a6d00;font-weight:600}
form.inline{display:flex;flex-wrap:wrap;gap:.35rem;align-items:center;margin:.15rem 0}
.panel{background:#fff;border:1px solid #d9dee6;border-radius:.45rem;padding:.8rem;margin-bottom:1rem}
.panel h2{margin-top:0}
.panel form{display:grid;grid-template-columns:repeat(auto-fit,minmax(12rem,1fr));gap:.5rem;align-items:end}
label{display:block;font-size:.88rem;color:#3c4654}
input,button,select{font:inherit;padding:.45rem .55rem;border:1px solid #b8c1cc;border-radius:.3rem;min-height:2.4rem}
input{width:100%;background:#fff}
form.inline input{width:auto;flex:1 1 8rem;min-width:6rem}
button{background:#2f5784;color:#fff;border-color:#2f5784;cursor:pointer}
button.danger{background:#fff;color:#b42318;border-color:#e0a3a3}
.login{max-width:22rem;margin:3rem auto}
.login form{display:grid;gap:.6rem}
pre{white-space:pre-wrap;word-break:break-all;background:#fff;border:1px solid #d9dee6;padding:.6rem;border-radius:.3rem;font-size:.85rem}
@media (max-width:40em){
 main{padding:.6rem}
 table,thead,tbody,tr,th,td{display:block}
 thead{display:none}
 tr{border-bottom:2px solid #d9dee6;padding:.3rem 0}
 td{border:0;padding:.25rem .6rem}
 td[data-label]::before{content:attr(data-label);display:block;font-size:.8rem;color:#5a6472}
 header{padding:.5rem .6rem}
 header nav a{padding:.3rem .45rem}
 .cards{grid-template-columns:repeat(auto-fill,minmax(6.4rem,1fr));gap:.5rem}
 .card{padding:.5rem .6rem}
 .card .n{font-size:1.35rem}
 .card .l{font-size:.82rem}
}
"""


def _csrf_field(csrf: str) -> Tag:
    return tags.input(type="hidden", name="csrf", value=csrf)


def post_form(action: str, csrf: str, *children: Any, cls: str = "inline", confirm: str = "") -> Tag:
    """A POST form that carries the session's CSRF token."""
    return tags.form(_csrf_field(csrf), *children, method="post", action=action, **{"class": cls})


def cell(label: str, *content: Any, cls: str = "") -> Tag:
    attrs = {"data-label": label}
    if cls:
        attrs["class"] = cls
    return tags.td(*content, **attrs)


def table(headings: tuple[str, ...], rows: list[Tag]) -> Tag:
    return tags.table(tags.thead(tags.tr(*[tags.th(h) for h in headings])), tags.tbody(*rows))


def frame(title: str, body: Any, *, user: str = "", csrf: str = "", active: str | None = None,
          flash: list[str] | None = None) -> Tag:
    header_children: list[Any] = [tags.span("mailsuite admin", **{"class": "brand"})]
    if user:
        header_children.append(tags.nav(*[
            tags.a(label, href=f"/admin/{path}", **({"class": "on"} if path == active else {}))
            for path, label in NAV
        ]))
        header_children.append(post_form("/admin/logout", csrf, tags.button(f"Log out {user}", type="submit"),
                                         cls="logout"))
    messages = []
    for text in flash or []:
        error = text.startswith("!")
        messages.append(tags.div(text[1:] if error else text, **{"class": "flash error" if error else "flash"}))
    # twisted.web.template's tag list predates <main>; Tag builds it the same way.
    return tags.html(
        tags.head(
            tags.meta(charset="utf-8"),
            tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
            tags.title(f"{title} · mailsuite"),
            tags.link(rel="stylesheet", href="/admin/style.css"),
        ),
        tags.body(tags.header(*header_children), Tag("main")(tags.h1(title), *messages, body)),
        lang="en",
    )
