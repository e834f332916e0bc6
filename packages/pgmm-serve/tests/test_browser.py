"""The web page in a real headless Chromium: choose (or drop) a known picture, its caption appears; ask, the
answer streams in.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (JSON messages
ending in NUL on file descriptors 3 and 4, as Puppeteer's pipe transport does), so no driver or
websocket library is needed. The picture is chosen through the page's own file input
(``DOM.setFileInputFiles`` fires its ``change`` event), the page streams the caption from the
server, and the screenshot is checked: the caption's box shows exactly the pixels of the expected
caption text (drawn again by the test into the same box), and the preview shows the picture.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from pgmm_serve.app import ServeSettings


class DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe, attached to one page."""

    def __init__(self, chromium: str, flags: list[str], env: dict[str, str]) -> None:
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # above 4, so that the launcher can put them at 3 and 4 without clobbering one with the other
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_read, from_browser_write)]
        # a fresh interpreter moves them and execs Chromium (no preexec_fn in this threaded process)
        launcher = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); " \
                   "os.execv(sys.argv[3], sys.argv[3:])"
        self.process = subprocess.Popen(
            [sys.executable, "-c", launcher, *map(str, high), chromium, *flags, "--remote-debugging-pipe",
             "about:blank"], pass_fds=high, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (to_browser_read, from_browser_write, *high):
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session: str | None = None
        target = self.call("Target.createTarget", url="about:blank", session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True,
                                 session=False)["sessionId"]

    def call(self, method: str, *, session: bool = True, timeout: float = 30, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    self.events.remove(event)
                    return event
            self.events.append(self._read(deadline))

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self) -> np.ndarray:
        shot = self.call("Page.captureScreenshot", format="png")["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(shot))).convert("RGB"), dtype=np.int32)

    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "Chromium did not answer in time"
            ready, _, _ = select.select([self._from_browser], [], [], remaining)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                assert chunk, "Chromium closed its debugging pipe"
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def close(self) -> None:
        try:
            self.call("Browser.close", session=False, timeout=5)
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture
def browser(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("PGMM_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required (PGMM_REQUIRE_CHROMIUM is set) but not installed")
        pytest.skip("chromium not installed (CI installs it; apt-get install chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--window-size=1280,800", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"]
    # Chromium writes dconf and crash-report settings under $HOME whatever --user-data-dir says: its own home
    home = tmp_path / "chromium-home"
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache")}
    tools = DevTools(chromium, flags, env)
    yield tools
    tools.close()


def box(page: DevTools, selector: str) -> tuple[slice, slice]:
    rect = page.evaluate(f"(() => {{ const r = document.querySelector('{selector}').getBoundingClientRect(); "
                         f"return [r.top, r.bottom, r.left, r.right].map(Math.round); }})()")
    return slice(rect[0], rect[1]), slice(rect[2], rect[3])


def test_the_page_shows_the_caption_of_a_chosen_picture_and_answers_a_question(serve, engine, browser, tmp_path):
    from skimage import data

    picture = tmp_path / "chelsea.png"
    Image.fromarray(data.chelsea()).save(picture)
    expected = engine.captioner.caption([Image.open(picture)])[0]
    base = serve(ServeSettings())

    browser.call("Page.enable")
    browser.call("Page.navigate", url=base + "/")
    browser.wait_event("Page.loadEventFired")
    document = browser.call("DOM.getDocument")["root"]["nodeId"]
    chooser = browser.call("DOM.querySelector", nodeId=document, selector="#file")["nodeId"]
    browser.call("DOM.setFileInputFiles", nodeId=chooser, files=[str(picture)])
    deadline = time.monotonic() + 60
    while browser.evaluate("document.getElementById('caption').dataset.done") != "true":
        assert time.monotonic() < deadline, browser.evaluate("document.getElementById('status').textContent")
        time.sleep(0.05)
    browser.evaluate("document.getElementById('preview').decode()")  # the preview is drawn
    assert browser.evaluate("document.getElementById('caption').textContent") == expected
    assert browser.evaluate("document.getElementById('status').textContent") == ""
    assert "step 4" in browser.evaluate("document.getElementById('model-info').textContent")

    shown = browser.screenshot()
    caption_box, preview_box = box(browser, "#caption"), box(browser, "#preview")
    browser.evaluate("document.getElementById('caption').textContent = ''")
    empty = browser.screenshot()
    browser.evaluate(f"document.getElementById('caption').textContent = {json.dumps(expected)}")
    redrawn = browser.screenshot()

    on_page = shown[caption_box]
    assert np.abs(on_page - empty[caption_box]).max(axis=-1).mean() > 0.005  # text is drawn in the box
    assert np.array_equal(on_page, redrawn[caption_box])  # and it is exactly the expected caption
    # the same picture dropped on the drop zone (a drop event carrying the file) is captioned again
    browser.evaluate("(() => { const file = document.getElementById('file').files[0]; "
                     "document.getElementById('caption').textContent = ''; "
                     "delete document.getElementById('caption').dataset.done; "
                     "const data = new DataTransfer(); data.items.add(file); "
                     "document.getElementById('drop').dispatchEvent(new DragEvent('drop', "
                     "{dataTransfer: data, bubbles: true, cancelable: true})); })()")
    deadline = time.monotonic() + 60
    while browser.evaluate("document.getElementById('caption').dataset.done") != "true":
        assert time.monotonic() < deadline, browser.evaluate("document.getElementById('status').textContent")
        time.sleep(0.05)
    assert browser.evaluate("document.getElementById('caption').textContent") == expected

    # a question: typed and asked, the answer streams into its box
    answer_expected = engine.assistant.ask(Image.open(picture), "what colour is the shape?")
    browser.evaluate("document.getElementById('question').value = 'what colour is the shape?'; "
                     "document.getElementById('ask-button').click()")
    deadline = time.monotonic() + 60
    while browser.evaluate("document.getElementById('answer').dataset.done") != "true":
        assert time.monotonic() < deadline, browser.evaluate("document.getElementById('status').textContent")
        time.sleep(0.05)
    assert browser.evaluate("document.getElementById('answer').textContent").strip() == answer_expected
    answered = browser.screenshot()
    answer_box = box(browser, "#answer")
    assert np.abs(answered[answer_box] - empty[answer_box]).max(axis=-1).mean() > 0.005

    preview = shown[preview_box].reshape(-1, 3).mean(axis=0)
    reference = np.asarray(Image.open(picture).convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)
    assert np.abs(preview - reference).max() < 12, (preview, reference)  # the chosen picture is shown
