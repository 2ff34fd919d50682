"""The app in a real browser: start `scripts/app.py` on a free loopback port, drive its page in headless Chromium
(Debian's `chromium` and `chromium-driver` through selenium) and save a screenshot with the results: docs/app.png.

    python scripts/app_screenshot.py                        # the demo model and data -> docs/app.png
    python scripts/app_screenshot.py --video test003 --out /tmp/app.png --model_path CKPT --data_root DATA

The page is driven as a person would: the demo video chosen in its list, each expression typed into its column
(by default the words of the video's own expressions, one per column), *Segment* pressed, the overlay videos
waited for. Options other than these go to the app. tests/test_app.py drives the page with the same functions.
"""
import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from scripts.app import COLUMNS, DEFAULT_DATA, demo_videos
from util.errors import UserError, run_main
from util.misc import atomic_write

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "scripts" / "app.py"
DEFAULT_OUT = ROOT / "docs" / "app.png"
LOOPBACK = "127.0.0.1"
BROWSER, DRIVER = "chromium", "chromedriver"  # Debian's packages chromium and chromium-driver
START_TIMEOUT_S = 300  # the app imports torch and gradio and loads the model; slow on two shared cores
RESULT_TIMEOUT_S = 300  # a request: speech, inference and the overlay video
POLL_S = 0.5
WINDOW_WIDTH, MIN_WINDOW_HEIGHT = 1400, 900
WINDOW_MARGIN = 100  # the window's own bars: the page is a little shorter than the window
HAVE_FRAME = 2  # HTMLMediaElement.HAVE_CURRENT_DATA: the video element shows a frame


def free_port() -> int:
    """A port nothing listens on now (the system's pick for a loopback socket)."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def start_app(argv: Sequence[str], log: Path) -> Tuple[subprocess.Popen, str]:
    """`scripts/app.py argv` on a free loopback port, its output in `log`; returns (the process, its URL) once the
    page answers. An app that stops first is a UserError with the end of its log."""
    port = free_port()
    url = f"http://{LOOPBACK}:{port}/"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, str(APP), "--host", LOOPBACK, "--port", str(port), *argv],
                                   stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise UserError(f"the app stopped (exit {process.returncode}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=POLL_S):
                return process, url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(POLL_S)
    process.terminate()
    raise UserError(f"the app did not answer at {url} within {START_TIMEOUT_S} s: {log.read_text()[-2000:]}")


def stop_app(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=START_TIMEOUT_S)


def headless_chromium():
    """Debian's Chromium through its chromedriver, headless, the size of a laptop screen."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which(BROWSER), shutil.which(DRIVER)
    if not browser or not driver:
        raise UserError(f"the browser needs Debian's chromium and chromium-driver: apt-get install {BROWSER} "
                        f"chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 f"--window-size={WINDOW_WIDTH},{MIN_WINDOW_HEIGHT}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def drive_page(url: str, video: str, phrases: Sequence[str], out: Path) -> None:
    """Choose `video` in the page at `url`, type `phrases[i]` into column i + 1 and press its *Segment*, wait for
    each overlay video to show a frame, and save a screenshot of the whole page as `out` (PNG)."""
    from selenium.common.exceptions import ElementClickInterceptedException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    def choose_video(page) -> bool:
        # the list, filtered by the typed name, shows the video's entry ("name: its words"; the chosen one after a
        # check mark line)
        entries = [item for item in page.find_elements(By.CSS_SELECTOR, "li[role='option']")
                   if item.text.splitlines()[-1].startswith(f"{video}:")]
        if entries:
            entries[0].click()
        return bool(entries)

    def shows_a_frame(column: int):
        def ready(page) -> bool:
            overlay = page.find_element(By.CSS_SELECTOR, f"#overlay_{column} video")
            return page.execute_script("return arguments[0].readyState", overlay) >= HAVE_FRAME
        return ready

    browser = headless_chromium()
    try:
        browser.get(url)
        # Gradio re-renders its components as the page settles and results arrive: an element found a moment ago
        # may be replaced (stale) or covered, so each wait looks it up again
        wait = WebDriverWait(browser, RESULT_TIMEOUT_S,
                             ignored_exceptions=(StaleElementReferenceException, ElementClickInterceptedException))
        choice = wait.until(lambda page: page.find_element(By.CSS_SELECTOR, "#demo_video input"))
        choice.click()
        choice.send_keys(Keys.CONTROL, "a")
        choice.send_keys(video)
        wait.until(choose_video)
        for column, phrase in enumerate(phrases, start=1):
            browser.find_element(By.CSS_SELECTOR, f"#phrase_{column} textarea").send_keys(phrase)
            browser.find_element(By.CSS_SELECTOR, f"#segment_{column}").click()
            wait.until(shows_a_frame(column))
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(WINDOW_WIDTH, max(MIN_WINDOW_HEIGHT, height + WINDOW_MARGIN))
        browser.execute_script("window.scrollTo(0, 0)")
        picture = browser.get_screenshot_as_png()
    finally:
        browser.quit()
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(picture))


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="the screenshot (PNG)")
    parser.add_argument("--video", default="", help="the demo video to choose (default: the first held-out one)")
    parser.add_argument("--phrases", nargs="+", default=None, metavar="WORDS",
                        help=f"one expression per column (up to {COLUMNS}; default: the video's own)")
    parser.add_argument("--data_root", default=str(DEFAULT_DATA), help="the app's --data_root")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args, app_argv = get_parser().parse_known_args(argv)
    videos = demo_videos(Path(args.data_root))
    if not videos:
        raise UserError(f"no held-out videos in {args.data_root} (test_videos.txt): run `make demo`")
    video = args.video or next(iter(videos))
    if video not in videos:
        raise UserError(f"--video {video}: not a held-out video of {args.data_root} ({', '.join(videos)})")
    phrases: List[str] = (args.phrases or videos[video][1])[:COLUMNS]
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="wnet-app-screenshot.") as work:
        process, url = start_app([*app_argv, "--data_root", args.data_root], Path(work) / "app.log")
        try:
            drive_page(url, video, phrases, out)
        finally:
            stop_app(process)
    print(f"{out}: {video}, {' / '.join(phrases)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run_main(main))
