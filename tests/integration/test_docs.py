"""The documentation stays true to the app: every setting, route and metric has its reference
entry, every relative link leads somewhere, and the README stays a short first read."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from aiohttp import web

from myticket.config import ENVIRONMENT_VARIABLES
from myticket.telemetry.metrics import Metrics
from myticket.web.routes import setup_routes

from ..paths import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"
README = PROJECT_ROOT / "README.md"
README_MAX_LINES = 150

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
# [text](target) and [text](target "title"); images too. Autolinks and bare URLs are not
# relative links.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`]*`")


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks: what GitHub renders as text, headings and links."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation other than '-' and '_'
    removed (markup included), spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2 … as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(read(path)):
        match = HEADING.match(line)
        if match is None:
            continue
        slug = github_slug(match[1])
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    # A link's text may run over two lines, so links are found in the whole prose.
    prose = INLINE_CODE.sub("", "\n".join(prose_lines(read(path))))
    return [target for target in LINK.findall(prose) if not urlsplit(target).scheme and not target.startswith("//")]


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{path.relative_to(PROJECT_ROOT)}: {target} (no such file)")
        elif anchor and (linked.suffix != ".md" or unquote(anchor) not in anchors(linked)):
            broken.append(f"{path.relative_to(PROJECT_ROOT)}: {target} (no such heading)")
    return broken


def test_every_environment_variable_is_in_the_configuration_reference():
    configuration = read(DOCS / "reference" / "configuration.md")
    missing = [name for name in ENVIRONMENT_VARIABLES if f"`{name}`" not in configuration]
    assert missing == []


def test_every_route_is_in_the_http_reference():
    app = web.Application()
    setup_routes(app)
    routes = {f"{route.method} {route.resource.canonical}" for route in app.router.routes() if route.method != "HEAD"}
    http_api = read(DOCS / "reference" / "http-api.md")
    assert routes, "setup_routes registered no route"
    assert sorted(route for route in routes if f"`{route}`" not in http_api) == []


def test_every_exported_metric_is_in_the_metrics_reference():
    exported = list(Metrics().registry.collectors)
    metrics = read(DOCS / "reference" / "metrics.md")
    assert exported, "the registry holds no collector"
    assert [name for name in exported if f"`{name}`" not in metrics] == []


def test_every_relative_link_leads_to_a_file_and_heading():
    files = markdown_files()
    assert len(files) > 1 and sum(len(relative_links(path)) for path in files) > 0
    broken = [broken for path in files for broken in broken_links(path)]
    assert not broken, "\n".join(broken)


def test_the_readme_is_short_and_starts_with_the_two_commands():
    text = read(README)
    assert len(text.splitlines()) <= README_MAX_LINES

    # The first code block holds exactly `make run` and `make test`, and comes before the
    # second section of the README.
    lines = text.splitlines()
    fences = [number for number, line in enumerate(lines) if FENCE.match(line)]
    first_block = lines[fences[0] + 1 : fences[1]]
    commands = [line.split("#", 1)[0].strip() for line in first_block]
    assert [command for command in commands if command] == ["make run", "make test"]
    sections = [number for number, line in enumerate(lines) if line.startswith("## ")]
    assert fences[0] < sections[1]


def test_github_slugs_follow_githubs_rules():
    assert github_slug("Who may read") == "who-may-read"
    assert github_slug("`GET /tickets/{ticket_id}`") == "get-ticketsticket_id"
    assert github_slug("Archive, purge and restore days") == "archive-purge-and-restore-days"
    assert github_slug("Keep N days (retention)") == "keep-n-days-retention"
    assert github_slug("One sender's bad input costs only its own ticket") == (
        "one-senders-bad-input-costs-only-its-own-ticket"
    )
