"""The browser fixture itself: Debian's Chromium starts headless and renders Chinese text."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.browser


def test_chromium_renders_chinese(page: Any) -> None:
    page.set_content("<html><body><p id='t' style='font-size:32px'>您好，很高兴为您服务</p></body></html>")
    box = page.locator("#t").bounding_box()
    assert page.locator("#t").inner_text() == "您好，很高兴为您服务"
    # Ten CJK glyphs at 32px are wide; tofu boxes would be too, but an absent font renders zero-width nothing.
    assert box is not None and box["width"] > 200
