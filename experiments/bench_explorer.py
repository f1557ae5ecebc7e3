"""Times the latent explorer's decode round trip, in the Python process and in Chromium.

    python experiments/bench_explorer.py --workdir=/tmp/vae
    python experiments/bench_explorer.py --workdir=/tmp/vae --screenshot=docs/images/explorer.png

Three figures, each a median over `--moves` pointer positions on a circle
through the plane:
  * decode: `explorer.decode_codes` of one code (the jitted `vae_jax.decode`
    plus the uint8 conversion), in this process;
  * HTTP: one POST /decode from this process (urllib), answer parsed;
  * browser: from the page's request to the image drawn on its canvas, as the
    page records it (`window.explorer.timings`), pointer moves sent by
    Selenium to Debian's headless chromium (skipped without it).
The target is a median round trip under 50 ms on a 2-core CPU.
`--screenshot` saves the page after the moves and two clicked test points.
"""
import argparse
import json
import statistics
import tempfile
import threading
import time
import urllib.request

import numpy as np

import vae_jax
from vae_jax import explorer

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def time_decode(model, codes) -> float:
  """Median ms of decoding one code in this process."""
  times = []
  for z in codes:
    start = time.perf_counter()
    explorer.decode_codes(model, z[None])
    times.append(1e3 * (time.perf_counter() - start))
  return statistics.median(times)


def time_http(url: str, codes) -> float:
  """Median ms of one POST /decode, answer read and parsed."""
  times = []
  for z in codes:
    body = json.dumps({"codes": [z.tolist()]}).encode()
    start = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url + "decode", data=body)) as reply:
      json.loads(reply.read())
    times.append(1e3 * (time.perf_counter() - start))
  return statistics.median(times)


def browser(profile: str):
  """Headless Chromium with the offline flags the browser test uses."""
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-dev-shm-usage", "--window-size=1100,960",
               f"--user-data-dir={profile}"):
    options.add_argument(flag)
  return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def time_browser(url: str, moves: int, screenshot: str | None) -> float:
  """Median ms from the page's request to the drawn image, over `moves` pointer moves."""
  from selenium.webdriver.common.action_chains import ActionChains  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as profile:
    page = browser(profile)
    try:
      page.get(url)
      wait = WebDriverWait(page, 60)
      wait.until(lambda b: b.execute_script("return document.body.dataset.ready === 'true'"))
      plane, decoded = page.find_element(By.ID, "plane"), page.find_element(By.ID, "decoded")
      count = lambda: int(decoded.get_attribute("data-decodes"))
      wait.until(lambda b: count() >= 1)
      for i in range(moves):
        before, angle = count(), 2 * np.pi * i / moves
        ActionChains(page).move_to_element_with_offset(
            plane, int(150 * np.cos(angle)), int(150 * np.sin(angle))).perform()
        wait.until(lambda b: count() > before)
      timings = page.execute_script("return window.explorer.timings")[-moves:]
      if screenshot:
        _show_a_path(page, plane, wait)
        page.save_screenshot(screenshot)
      return statistics.median(timings)
    finally:
      page.quit()


def _show_a_path(page, plane, wait) -> None:
  """Clicks two test points of different labels, then rests the pointer on the plane."""
  from selenium.webdriver.common.action_chains import ActionChains  # pylint: disable=g-import-not-at-top
  spots = page.execute_script(
      "const c = document.getElementById('plane');"
      "const j = app.scene.labels.findIndex((l) => l !== app.scene.labels[0]);"
      "return [0, j].map((i) => toPixel(app.points[i]).map((x, a) => x - (a ? c.height : c.width) / 2));")
  for dx, dy in spots:
    ActionChains(page).move_to_element_with_offset(plane, int(dx), int(dy)).click().perform()
  wait.until(lambda b: b.execute_script(
      "return document.getElementById('interpolation').dataset.steps") == "9")
  ActionChains(page).move_to_element_with_offset(plane, 40, -60).perform()
  time.sleep(0.5)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a trained workdir")
  parser.add_argument("--moves", type=int, default=50)
  parser.add_argument("--screenshot", help="where to save the page, a .png")
  parser.add_argument("--browser", action=argparse.BooleanOptionalAction, default=True)
  args = parser.parse_args()
  model = vae_jax.load(args.workdir)
  server = explorer.serve(model, port=0)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  url = explorer.address(server)
  codes = np.random.default_rng(0).normal(size=(args.moves, model.module.latents))
  print(f"decode in this process: median {time_decode(model, codes):.2f} ms per code")
  print(f"HTTP POST /decode from this process: median {time_http(url, codes):.2f} ms")
  if args.browser:
    median = time_browser(url, args.moves, args.screenshot)
    print(f"Chromium, request to drawn image: median {median:.1f} ms over {args.moves} moves")
  server.shutdown()


if __name__ == "__main__":
  main()
