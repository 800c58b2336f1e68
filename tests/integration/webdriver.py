"""A small WebDriver client (W3C protocol, JSON over HTTP with http.client) for
Debian's chromedriver driving headless Chromium: no npm, no browser download.

Browser.start(tmp) starts chromedriver on a free port and one Chromium session with
a fresh profile; stop() always ends both. Elements are found by CSS selector;
wait_for polls a condition with a bounded timeout (never a fixed sleep).
"""
import base64
import http.client
import json
import os
import shutil
import subprocess
import time

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
ENTER = "\ue007"
SHIFT = "\ue008"
RELEASE = "\ue000"  # releases held modifier keys
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def available():
    """None when Chromium and chromedriver are installed, else why not."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.exists(p) or shutil.which(os.path.basename(p)))]
    return f"not installed: {', '.join(missing)} (scripts/install-deps installs chromium and chromium-driver)" \
        if missing else None


class WebDriverError(Exception):
    pass


class Browser:
    def __init__(self, tmp, port, width=1200, height=900):
        self.tmp = tmp
        self.port = port
        self.log_path = os.path.join(tmp, "chromedriver.log")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([shutil.which("chromedriver") or CHROMEDRIVER, f"--port={port}"],
                                     stdout=self.log, stderr=self.log, start_new_session=True)
        self.sid = None
        end = time.time() + 30
        while time.time() < end:
            try:
                if self._raw("GET", "/status")[1].get("value", {}).get("ready"):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            self.stop()
            raise WebDriverError("chromedriver did not start")
        args = ["--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
                f"--user-data-dir={os.path.join(tmp, 'chromium-profile')}", f"--window-size={width},{height}"]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": {"binary": shutil.which("chromium") or CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"}, "unhandledPromptBehavior": "accept"}}}
        st, r = self._raw("POST", "/session", caps, timeout=120)
        if st != 200:
            self.stop()
            raise WebDriverError(f"no browser session: {r}")
        self.sid = r["value"]["sessionId"]

    # ---- protocol ----

    def _raw(self, method, path, body=None, timeout=60):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, json.loads(data) if data else {}

    def cmd(self, method, path, body=None, timeout=60):
        st, r = self._raw(method, f"/session/{self.sid}{path}", body, timeout)
        if st != 200:
            v = r.get("value", {})
            raise WebDriverError(f"{method} {path}: {v.get('error')}: {v.get('message', '')[:500]}")
        return r.get("value")

    # ---- navigation and scripts ----

    def go(self, url):
        self.cmd("POST", "/url", {"url": url})

    def url(self):
        return self.cmd("GET", "/url")

    def js(self, script, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def js_async(self, script, *args, timeout=60):
        """script's last argument is the callback."""
        self.cmd("POST", "/timeouts", {"script": int(timeout * 1000)})
        return self.cmd("POST", "/execute/async", {"script": script, "args": list(args)}, timeout=timeout + 10)

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.cmd("GET", "/screenshot")))
        return path

    def resize(self, width, height):
        self.cmd("POST", "/window/rect", {"width": width, "height": height})

    def console(self):
        try:
            return self._raw("POST", f"/session/{self.sid}/se/log", {"type": "browser"})[1].get("value", [])
        except Exception:
            return []

    # ---- elements ----

    def find_all(self, css):
        return [e[ELEMENT] for e in self.cmd("POST", "/elements", {"using": "css selector", "value": css})]

    def find(self, css):
        found = self.find_all(css)
        if not found:
            raise WebDriverError(f"no element {css}")
        return found[0]

    def click(self, css):
        self.cmd("POST", f"/element/{self.find(css)}/click", {})

    def type(self, css, text, clear=True):
        e = self.find(css)
        if clear:
            self.cmd("POST", f"/element/{e}/clear", {})
        self.cmd("POST", f"/element/{e}/value", {"text": text})

    def text(self, css):
        return self.cmd("GET", f"/element/{self.find(css)}/text")

    def texts(self, css):
        return [self.cmd("GET", f"/element/{e}/text") for e in self.find_all(css)]

    def visible(self, css):
        """True when the element exists and is displayed (not hidden)."""
        return bool(self.js("const e = document.querySelector(arguments[0]);"
                            "return !!e && !e.closest('[hidden]') && e.getClientRects().length > 0;", css))

    def wait_for(self, cond, timeout=60, what="a condition"):
        end = time.time() + timeout
        last = None
        while time.time() < end:
            try:
                last = cond()
                if last:
                    return last
            except WebDriverError as e:
                last = e
            time.sleep(0.1)
        raise WebDriverError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")

    def wait_visible(self, css, timeout=60):
        return self.wait_for(lambda: self.visible(css), timeout, f"{css} to show")

    def stop(self):
        if self.sid:
            try:
                self._raw("DELETE", f"/session/{self.sid}", timeout=30)
            except Exception:
                pass
            self.sid = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        # chromium processes of the session's process group, if any are left
        try:
            os.killpg(self.proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
        if not self.log.closed:
            self.log.close()
