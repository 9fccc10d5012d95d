"""The app in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`, test.sh installs them)
driven by Selenium, against the app serving a tiny checkpoint, a copy of the shared profiles and images, and a copy of
part of the published evaluation (the user's folders: nothing may be written into them).

Screenshots go to $MMROLE_SCREENSHOTS when set (to look at them), else to the tests' temporary folder.
"""

import hashlib
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

import pytest
from PIL import Image

from mmrole.app.chat_page import ChatPage
from mmrole.app.evaluation import load_eval_folder
from mmrole.app.profiles import load_character_book
from mmrole.app.replies import EndpointReplies, LocalReplies
from mmrole.backends.client import ChatClient
from mmrole.common.prompts import ROLEPLAY_SYSTEM

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKENS = 24
KNOWN = "in/human-role/Iron_Man_human-role-dialogue_COCO_30_7"
WAIT = 60


# --- the app and its user's folders --------------------------------------------------------------

def fingerprint(*folders):
    """Every file and folder under the folders, with each file's size, modification time and content digest."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            if p.is_file() else "folder" for folder in folders for p in sorted(Path(folder).rglob("*"))}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, mmrole_data, mmrole_reference):
    """The user's folders: profiles (Hawkeye's profile removed) with the images, and an evaluation folder with two
    models, one damaged reviews file of a third, and the published table5.csv."""
    data = tmp_path_factory.mktemp("user-data")
    split = data / "profiles" / "in-distribution"
    split.mkdir(parents=True)
    shutil.copy(mmrole_data / "profiles" / "in-distribution" / "roles.json", split)
    profiles = json.loads((mmrole_data / "profiles" / "in-distribution" / "profiles.json").read_text())
    del profiles["Hawkeye"]
    (split / "profiles.json").write_text(json.dumps(profiles, ensure_ascii=False))
    shutil.copytree(mmrole_data / "images", data / "images")
    evaluation = tmp_path_factory.mktemp("user-eval")
    for kind in ("reviews", "results"):
        for model in ("mmrole-agent", "gpt-4-turbo"):
            shutil.copytree(mmrole_reference / f"in-test_{kind}" / model, evaluation / f"in-test_{kind}" / model)
    (evaluation / "in-test_reviews" / "broken-model").mkdir()
    (evaluation / "in-test_reviews" / "broken-model" / "comment_test.json").write_text('[{"id": "x", ')
    shutil.copy(mmrole_reference / "table5.csv", evaluation)
    uploads = tmp_path_factory.mktemp("uploads")
    Image.new("RGB", (64, 48), (200, 40, 40)).save(uploads / "red.png")
    (uploads / "notes.png").write_text("not an image at all")
    Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3)).save(uploads / "noise.png")  # ~270 kB
    return {"data": data, "eval": evaluation, "uploads": uploads, "before": fingerprint(data, evaluation)}


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(page, folder, image_dir=None):
    from mmrole.app.web import CSS, build_app, theme

    app = build_app(page, folder, image_dir, concurrency=8)
    app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
               ssr_mode=False, footer_links=[], theme=theme(), css=CSS, max_file_size=2**20)
    return app


@pytest.fixture(scope="module")
def app(folders, backend):
    """The app on the tiny checkpoint (greedy, TOKENS new tokens), uploads up to 200 kB."""
    replies = LocalReplies(backend, batch_size=4)
    page = ChatPage(load_character_book(folders["data"] / "profiles"), replies, max_image_bytes=200_000,
                    max_image_pixels=4096 * 4096, greedy=True, max_new_tokens=TOKENS)
    running = launch(page, load_eval_folder(folders["eval"]), folders["data"] / "images")
    yield running
    running.close()
    replies.close()


@pytest.fixture(scope="module")
def down_app(folders, tmp_path_factory):
    """The app with an endpoint nobody answers at, and an empty evaluation folder."""
    port = free_port()
    client = ChatClient("tiny-agent", base_url=f"http://127.0.0.1:{port}/v1", max_attempts=1,
                        api_key_env="MMROLE_TEST_UNSET_KEY")
    page = ChatPage(load_character_book(folders["data"]), EndpointReplies(client), max_image_bytes=200_000,
                    max_image_pixels=4096 * 4096, greedy=True, max_new_tokens=TOKENS)
    running = launch(page, load_eval_folder(tmp_path_factory.mktemp("empty-eval")))
    yield running
    running.close()


# --- the browser -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed: apt-get install chromium chromium-driver "
                    "(bash test.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-extensions", "--no-first-run",
                 "--window-size=1400,1800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = os.environ.get("MMROLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder)
    return tmp_path_factory.mktemp("screenshots")


def screenshot(driver, shots, name, height=None):
    """A screenshot of the whole page (the window grows to the page's height)."""
    height = height or driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(height, 900), 6000))
    time.sleep(0.3)
    driver.save_screenshot(str(shots / f"{name}.png"))
    driver.set_window_size(1400, 1800)


def wait_for(condition, what, timeout=WAIT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def by_id(driver, element_id):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def open_page(driver, url):
    driver.get(url)
    wait_for(lambda: css(driver, "#chat-status-text"), "the page to load")
    time.sleep(0.5)  # the load event's updates


def choose(driver, element_id, text):
    """Pick an option of a Gradio dropdown the way a user does: type, then Enter."""
    from selenium.webdriver.common.keys import Keys

    field = css(driver, f"#{element_id} input")[0]
    field.click()
    field.send_keys(Keys.CONTROL, "a")  # replace what the field shows
    field.send_keys(text)
    time.sleep(0.3)
    field.send_keys(Keys.ENTER)
    time.sleep(0.6)


def click_radio(driver, element_id, value):
    css(driver, f"#{element_id} input[value='{value}']")[0].click()
    time.sleep(0.6)


def upload(driver, path):
    css(driver, "#upload input[type=file]")[0].send_keys(str(path))
    time.sleep(1.5)


def status(driver):
    return by_id(driver, "chat-status").text.strip()


def bot_texts(driver):
    return [e.get_attribute("textContent") for e in css(driver, "#chatbot [data-testid=bot]")]


def watch_replies(driver):
    """Record every text the character's last message shows, as the browser renders it."""
    driver.execute_script("""
        window.__seen = [];
        const box = document.querySelector('#chatbot');
        new MutationObserver(() => {
            const bots = box.querySelectorAll('[data-testid=bot]');
            if (bots.length) {
                const text = bots[bots.length - 1].textContent;
                if (window.__seen[window.__seen.length - 1] !== text) window.__seen.push(text);
            }
        }).observe(box, {subtree: true, childList: true, characterData: true});""")


def send(driver, text):
    box = css(driver, "#message textarea")[0]
    box.clear()
    box.send_keys(text)
    by_id(driver, "send").click()


def open_prompt(driver):
    """Open "The exact prompt" (its box exists only while it is open)."""
    css(driver, "#prompt-accordion .label-wrap")[0].click()
    wait_for(lambda: css(driver, "#prompt textarea"), "the prompt box")


def shown_prompt(driver):
    return by_id(driver, "prompt").find_element("css selector", "textarea").get_attribute("value")


def expected_reply(tiny, prompt_text):
    """What one-at-a-time greedy chat() answers to the prompt the page shows (system, then the user turn in Qwen-VL's
    list format, the image named by its path)."""
    from mmrole.qwen_vl.generation.chat import chat

    system, user = prompt_text.split("\n\n[user]\n", 1)
    assert system == f"[system]\n{ROLEPLAY_SYSTEM}"
    _, model, tokenizer = tiny
    return chat(model, tokenizer, user, history=[], system=ROLEPLAY_SYSTEM, do_sample=False, max_new_tokens=TOKENS)[0]


def first_sample(driver):
    """The sample key in the first row of the sample list."""
    return wait_for(lambda: css(driver, "#samples [data-testid='cell-0-0']"), "the sample list")[0].text.strip()


def same_text(a, b):
    return " ".join(a.split()) == " ".join(b.split())


# --- the chat page ---------------------------------------------------------------------------------

def test_chat_a_streamed_reply_equal_to_chat(app, browser, tiny, folders, shots):
    open_page(browser, app.local_url)
    choose(browser, "character", "Iron Man")
    card = by_id(browser, "character-card").text
    assert "Iron Man from The Avengers" in card and "Tony Stark, also known as Iron Man" in card
    upload(browser, folders["uploads"] / "red.png")
    assert status(browser) == "" and css(browser, "#preview img")
    open_prompt(browser)
    watch_replies(browser)
    send(browser, "Hey Tony, what do you make of this red thing?")
    wait_for(lambda: shown_prompt(browser), "the exact prompt")
    prompt = shown_prompt(browser)
    assert "Please step into the shoes of Iron Man from The Avengers." in prompt
    assert prompt.endswith("vocabulary of Iron Man:\nHey Tony, what do you make of this red thing?")
    expected = expected_reply(tiny, prompt)
    wait_for(lambda: bot_texts(browser) and same_text(bot_texts(browser)[-1], expected), "the reply")
    seen = [t for t in browser.execute_script("return window.__seen") if t.strip() not in ("", "…")]
    assert len(seen) >= 2, seen  # it grew in the page, piece by piece
    assert all(same_text(expected[:len(s.strip())], s) or expected.startswith(s.strip()) for s in seen), seen
    screenshot(browser, shots, "chat-reply")
    send(browser, "And the second question?")
    wait_for(lambda: len(bot_texts(browser)) == 2 and "[human]: Hey Tony" in shown_prompt(browser), "a second turn")
    assert f"[Iron Man]: {expected}" in shown_prompt(browser)  # the history inside the prompt
    screenshot(browser, shots, "chat-prompt-shown")


def test_inter_role_the_character_opens_about_a_picked_image(app, browser, shots):
    open_page(browser, app.local_url)
    click_radio(browser, "mode", "inter-role")
    choose(browser, "character", "Thor")
    choose(browser, "partner", "Loki")
    assert "You play Loki." in by_id(browser, "character-card").text
    choose(browser, "image-pick", "The_Avengers/")
    wait_for(lambda: css(browser, "#preview img"), "the picked image")
    open_prompt(browser)
    by_id(browser, "character-opens").click()
    wait_for(lambda: bot_texts(browser), "the opening line")
    prompt = shown_prompt(browser)
    assert "Imagine you are talking with Loki from The Avengers about the given image." in prompt
    assert "The description of Loki is as follows:" in prompt
    assert "The auxiliary information of the image is as follows:" in prompt  # the picked image's annotation
    assert prompt.endswith("Please initiate the conversation with Loki in English using the distinctive tone, manner "
                           "and vocabulary of Thor, raising questions or commenting about the image.")
    screenshot(browser, shots, "chat-inter-role")


def test_bad_input_is_named_in_the_page_and_other_users_are_served(app, down_app, browser, folders, shots):
    open_page(browser, app.local_url)
    assert "no profile for 'Hawkeye'" in by_id(browser, "profile-problems").text
    choose(browser, "character", "Iron Man")
    upload(browser, folders["uploads"] / "notes.png")
    assert status(browser) == "⚠ notes.png: not an image (JPEG, PNG, GIF or WebP expected)"
    upload(browser, folders["uploads"] / "noise.png")
    assert re.fullmatch(r"⚠ noise\.png: the file has 0\.\d MB; at most 0\.191 MB are accepted", status(browser))
    send(browser, "Anyone there?")
    wait_for(lambda: "choose an image of the data or upload one first" in status(browser), "the missing image")
    click_radio(browser, "source", "written here")
    by_id(browser, "written-name").find_element("css selector", "textarea, input").send_keys("Ada")
    upload(browser, folders["uploads"] / "red.png")
    send(browser, "Who are you?")
    wait_for(lambda: "the written profile has no script" in status(browser), "the malformed profile")
    screenshot(browser, shots, "chat-bad-input")

    open_page(browser, down_app.local_url)
    choose(browser, "character", "Iron Man")
    upload(browser, folders["uploads"] / "red.png")
    send(browser, "Is anybody home?")
    wait_for(lambda: "did not answer: APIConnectionError" in status(browser), "the endpoint that is down")
    assert "model tiny-agent at http://127.0.0.1:" in status(browser)
    assert css(browser, "#message textarea")[0].get_attribute("value") == "Is anybody home?"  # kept to resend
    screenshot(browser, shots, "chat-backend-down")

    open_page(browser, app.local_url)  # another session of the working app still talks
    choose(browser, "character", "Woody")
    upload(browser, folders["uploads"] / "red.png")
    send(browser, "Howdy!")
    wait_for(lambda: bot_texts(browser), "a reply to another user")
    assert status(browser) == ""


# --- the evaluation browser ------------------------------------------------------------------------

def test_the_browser_shows_a_known_sample_its_reviews_and_scores(app, browser, folders, mmrole_reference, shots):
    open_page(browser, f"{app.local_url}?tab=eval&a=mmrole-agent&sample={KNOWN}")
    wait_for(lambda: KNOWN.split("/")[-1] in by_id(browser, "sample-detail").text, "the known sample")
    record = next(r for r in json.loads((mmrole_reference / "in-test_reviews" / "mmrole-agent" /
                                          "human-role_test.json").read_text()) if r["id"] == KNOWN.split("/")[-1])
    detail = by_id(browser, "sample-detail").text
    for metric in ("Fluency", "Personality Consistency"):
        review = record["rm_review"][metric]
        assert " ".join(review["review"].split()) in " ".join(detail.split())
        assert f"{review['score'][0]:g} vs ground truth {review['score'][1]:g}" in detail
    assert " ".join(record["conversations"][1]["answer"].split()) in " ".join(detail.split())
    table = by_id(browser, "table5").text
    published = (mmrole_reference / "table5.csv").read_text().splitlines()
    agent = next(line for line in published if line.startswith("mmrole-agent (In-Test),")).split(",")
    assert "mmrole-agent " + " ".join(agent[1:]) in " ".join(table.split())  # the paper's In-Test row, from the CSVs
    assert css(browser, "#radar img")
    assert "broken-model/comment_test.json: malformed JSON" in by_id(browser, "eval-problems").text
    assert "(not shown: no readable image at " in detail  # the COCO images are not in the data's images folder
    screenshot(browser, shots, "browser-known-sample")
    open_page(browser, f"{app.local_url}?tab=eval&sample=in/comment/Thor_comment_script_10_1")
    wait_for(lambda: "Thor_comment_script_10_1" in by_id(browser, "sample-detail").text, "a sample with its image")
    assert "The_Avengers/11.jpg" in by_id(browser, "sample-detail").text and css(browser, "#sample-image img")
    screenshot(browser, shots, "browser-sample-image")


def test_two_models_side_by_side_and_a_link_that_reopens_the_view(app, browser, mmrole_reference, shots):
    open_page(browser, f"{app.local_url}?tab=eval")
    choose(browser, "filter-dialogue_type", "inter-role")
    choose(browser, "filter-model_a", "mmrole-agent")
    choose(browser, "filter-model_b", "gpt-4-turbo")
    click_radio(browser, "filter-sort", "score gap")
    wait_for(lambda: "tab=eval" in browser.current_url and "sort=score+gap" in browser.current_url,
             "the address bar to follow the view")
    assert by_id(browser, "view-link").find_element("css selector", "textarea, input").get_attribute("value") == \
        browser.current_url
    first = first_sample(browser)
    assert first.startswith("in/inter-role/")
    answers = {}
    for model in ("mmrole-agent", "gpt-4-turbo"):
        records = json.loads((mmrole_reference / "in-test_reviews" / model / "inter-role_test.json").read_text())
        answers[model] = next(r for r in records if r["id"] == first.split("/")[-1])["conversations"][1]["answer"]
    css(browser, "#samples [data-testid='cell-0-0']")[0].click()  # a click on a row shows that sample
    wait_for(lambda: first.split("/")[-1] in by_id(browser, "sample-detail").text, "the clicked sample")
    detail = " ".join(by_id(browser, "sample-detail").text.split())
    for model, answer in answers.items():  # side by side
        assert " ".join(answer.split()) in detail, model
    wait_for(lambda: f"sample={first.replace('/', '%2F')}" in browser.current_url, "the clicked sample in the link")
    link = browser.current_url
    screenshot(browser, shots, "browser-two-models")

    browser.get("about:blank")
    open_page(browser, link)
    wait_for(lambda: first.split("/")[-1] in by_id(browser, "sample-detail").text, "the reopened view")
    assert css(browser, "#filter-model_b input")[0].get_attribute("value") == "gpt-4-turbo"
    assert css(browser, "#filter-dialogue_type input")[0].get_attribute("value") == "inter-role"
    assert first_sample(browser) == first
    screenshot(browser, shots, "browser-reopened")


def test_an_empty_evaluation_folder_is_named(down_app, browser, shots):
    open_page(browser, f"{down_app.local_url}?tab=eval")
    wait_for(lambda: "no evaluation files here" in by_id(browser, "eval-problems").text, "the empty folder's note")
    assert "No result CSVs here yet" in by_id(browser, "no-table5").text and not css(browser, "#table5")
    screenshot(browser, shots, "browser-empty-folder")


def test_nothing_was_written_into_the_users_folders(folders, app, down_app):
    assert fingerprint(folders["data"], folders["eval"]) == folders["before"]
