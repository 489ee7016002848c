"""The browser assets are served by Allo, from copies of the npm packages that frontend/ names."""

from __future__ import annotations

import json

import httpx

from tests.conftest import REPO

VENDOR = REPO / "src" / "allo" / "web" / "static" / "vendor"


def test_the_vendored_htmx_is_the_version_frontend_names() -> None:
    wanted = json.loads((REPO / "frontend" / "package.json").read_text())["dependencies"]
    copied = (VENDOR / "htmx.min.js").read_text()
    assert f'version:"{wanted["htmx.org"]}"' in copied


async def test_pages_load_their_scripts_from_allo_never_from_another_site(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/login")).text
    sources = [part.split('"')[1] for part in page.split("src=")[1:]]
    assert sources and all(source.startswith("/static/") for source in sources)
    for source in [*sources, "/static/allo.css"]:
        answer = await client.get(source)
        assert answer.status_code == 200 and len(answer.content) > 1000, source
