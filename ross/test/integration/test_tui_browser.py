"""
``ross-tui --serve`` in a real headless browser (Debian's chromium, driven
through its chromedriver with selenium): the page loads with the token, the
container table is on it, a shell pane opens, a typed command's output
comes back. And what the server refuses: no token, a wrong one, a
non-loopback address without TLS.

What the page shows is read from the bytes its websocket receives (the
terminal draws on a canvas): a script installed before the page's own wraps
WebSocket and keeps them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Callable

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from ross.testing.containers import ContainerTestCase
from ross.testing.daemon import REPO

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# Keeps what every websocket of the page receives, as text, in
# window.__received (the app's output is UTF-8 inside textual-serve's
# binary packets).
RECORDER = """
window.__received = "";
const Original = window.WebSocket;
window.WebSocket = function (...args) {
  const ws = new Original(...args);
  ws.addEventListener("message", (event) => {
    const data = event.data;
    if (typeof data === "string") { window.__received += data; }
    else if (data instanceof ArrayBuffer) { window.__received += new TextDecoder().decode(data); }
    else if (data instanceof Blob) { data.text().then((t) => { window.__received += t; }); }
  });
  return ws;
};
window.WebSocket.prototype = Original.prototype;
Object.assign(window.WebSocket, Original);
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 60, show: Callable[[], str] = str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{show()}")
        time.sleep(0.1)


class ServeTests(ContainerTestCase):
    timeout = 240

    def serve(self, *args: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        for name in ("ROSS_TLS_CA", "ROSS_TLS_CERT", "ROSS_TLS_KEY", "ROSS_TOKEN"):
            env.pop(name, None)
        process = subprocess.Popen([sys.executable, "-m", "ross.tui.app", *args], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(self.stop, process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()

    def test_refused_off_loopback_without_tls(self) -> None:
        """
        A non-loopback address without TLS is refused before anything
        listens, as the daemon refuses one.
        """
        result = subprocess.run([sys.executable, "-m", "ross.tui.app", "--serve", "0.0.0.0:0"],
                                env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, timeout=60)
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"refusing to serve the console on 0.0.0.0 without TLS", result.stderr)

    @inlineCallbacks
    def test_console_in_a_browser(self) -> Any:
        """
        With the token the page shows the console: the container table,
        then a shell pane where a typed command runs. Without the token, or
        with a wrong one, nothing is served.
        """
        if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
            self.fail("chromium and chromium-driver are not installed: ./dev setup installs them")
        yield self.ross("run", "-d", "--name", "browsed", "busybox", "sleep", "1000")
        port = free_port()
        token_file = self.mktemp()
        with open(token_file, "w") as f:
            f.write("s3cret-token\n")
        server = self.serve("--serve", f"127.0.0.1:{port}", "--serve-token-file", token_file,
                            "-H", self.daemon.address)
        url = f"http://127.0.0.1:{port}/"

        def refused(address: str) -> int:
            try:
                urllib.request.urlopen(address, timeout=10)
            except urllib.error.HTTPError as e:
                return e.code
            return 200

        def answering() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"the server exited: {server.stderr.read().decode() if server.stderr else ''}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return False

        def browse() -> tuple[str, str]:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service

            wait_until(answering, "the server to listen")
            self.assertEqual(refused(url), 403)
            self.assertEqual(refused(url + "?token=wrong"), 403)
            options = webdriver.ChromeOptions()
            options.binary_location = CHROMIUM
            for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--no-first-run",
                         "--window-size=1400,900"):
                options.add_argument(flag)
            driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
            try:
                driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
                driver.get(url + "?token=s3cret-token")
                self.assertEqual(driver.current_url, url)

                def received() -> str:
                    return str(driver.execute_script("return window.__received || ''"))

                wait_until(lambda: "browsed" in received() and "CONTAINER ID" in received(), "the table",
                           show=lambda: received()[-2000:])
                table = received()
                typing = driver.find_element("css selector", ".xterm-helper-textarea")
                typing.send_keys("e")
                wait_until(lambda: "sh: browsed" in received(), "the shell pane", show=lambda: received()[-2000:])
                wait_until(lambda: "/ #" in received().split("sh: browsed", 1)[-1], "the prompt")
                typing.send_keys("echo hello-$((40+2))\n")
                wait_until(lambda: "hello-42" in received(), "the command's output",
                           show=lambda: received()[-2000:])
                return table, received()
            finally:
                driver.quit()

        table, after = yield deferToThread(browse)
        self.assertIn("busybox", table)
        self.assertIn("hello-42", after)

