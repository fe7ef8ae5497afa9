"""The web inspector (`GET /ui`) in headless Chromium (Debian's, driven by Selenium through the
system chromedriver: no browser download), against a processor that demands an API token.

The page asks for the token, lists the agents of the processor (filtered), and follows one
LLM agent through a model step and a human approval: what it waits on, its steps, the
approval's Approve button, its live output from agent-stream, its events; then the send
form refuses a bad payload with the engine's reason and sends `close`; the dead-letters tab
shows a rejected event. A screenshot is kept (printed path; `AGENTSTREAM_TEST_ARTIFACTS`
names a folder to copy it to). `.ci/run` installs Chromium and sets AGENTSTREAM_REQUIRE_CHROMIUM=1,
so there it fails instead of skipping.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentstream.agents import AgentClient
from agentstream.agents.testing import Reply, ScriptedLLM, ToolCall
from agentstream.streams.settings import Settings
from support import Cluster, get_json

pytestmark = pytest.mark.integration

TOKEN = "inspector-test-token"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1100"]


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if os.environ.get("AGENTSTREAM_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are required here (apt-get install chromium chromium-driver)")
        pytest.skip("needs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="agentstream-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll `check` (a page read) until it returns something truthy; fail naming `what` past `timeout`."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # an element not there yet, or replaced while being read
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"the page did not show {what} within {timeout}s (last error: {last!r})")


async def test_the_inspector_follows_an_agent_through_a_step_and_an_approval(
    cluster: Cluster, browser: Any, tmp_path: Path,
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    def settled(read: Callable[[], Any]) -> Any:
        """`read` again while the page redraws what it reads (it refreshes every second)."""
        for _ in range(20):
            try:
                return read()
            except StaleElementReferenceException:
                time.sleep(0.05)
        return read()

    def text(element_id: str) -> str:
        return str(settled(lambda: browser.find_element(By.ID, element_id).text))

    def rows(element_id: str) -> list[list[str]]:
        def read() -> list[list[str]]:
            table = browser.find_element(By.ID, element_id)
            return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                    for tr in table.find_elements(By.TAG_NAME, "tr")]
        return settled(read)  # type: ignore[no-any-return]

    refunds = tmp_path / "refunds.jsonl"
    replies = [Reply.tools(ToolCall("issue_refund", {"confirmation": "ABC123", "amount": 80}, id="call_refund")),
               Reply.text("Refunded ABC123.")]
    with ScriptedLLM(replies) as llm:
        secured = {"AGENTSTREAM_API_TOKEN": TOKEN}
        processor = cluster.processor(app="approvalapp", env=secured).start()
        worker = cluster.worker(app="approvalapp", env={**secured, "AGENTSTREAM_LLM_BASE_URL": llm.base_url,
                                                        "APPROVALAPP_LOG": str(refunds)}).start()
        await asyncio.gather(asyncio.to_thread(processor.wait_ready), asyncio.to_thread(worker.wait_ready))
        settings = Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=processor.url,
                            api_token=TOKEN)
        async with AgentClient(settings) as client:
            await client.schedule_agent("ApprovalApp.Desk", "desk-ui", wait=60)
            await client.schedule_agent("ApprovalApp.Desk", "desk-other", wait=60)
            await client.send_agent_event("desk-ui", "message", {"text": "Refund ABC123, please."}, wait=60)
            await client.send_agent_event("desk-other", "nonsense", None)  # a dead letter for the tab
        assert get_json(f"{processor.url}/agents")[0] == 401  # the API wants the token; the page asks for it

        def show(page: str) -> None:
            browser.get(page)

        await asyncio.to_thread(show, f"{processor.url}/ui")

        def inspect() -> None:
            until(lambda: browser.find_element(By.ID, "token-form").is_displayed(), "the token prompt")
            browser.find_element(By.ID, "token").send_keys(TOKEN)
            browser.find_element(By.ID, "token-save").click()
            until(lambda: not browser.find_element(By.ID, "token-form").is_displayed(), "the token prompt gone")
            until(lambda: {r[0] for r in rows("agents")} == {"desk-ui", "desk-other"}, "both agents listed")
            browser.find_element(By.ID, "filter-prefix").send_keys("desk-u")
            until(lambda: [r[0] for r in rows("agents")] == ["desk-ui"], "the prefix filter applied")
            until(lambda: browser.find_element(By.CSS_SELECTOR, "tr.agent[data-agent-id='desk-ui']").click() or True,
                  "desk-ui clicked")  # the list is redrawn every second: click the row as it is now

            until(lambda: text("agent-title") == "desk-ui" and text("agent-status") == "running", "desk-ui selected")
            approval = until(lambda: browser.find_element(By.CSS_SELECTOR, "#approvals form.approval"),
                             "the approval request")
            until(lambda: any(r[1] == "condition" for r in rows("waiting")), "what its coroutines wait on")
            until(lambda: any(r[-1].startswith("ok:") for r in rows("steps")), "the model call's step, done")
            assert refunds.exists() is False  # not before the approval
            approval.find_element(By.CSS_SELECTOR, "input.reason").send_keys("checked")
            approval.find_element(By.CSS_SELECTOR, "button.approve").click()

            until(lambda: "Refunded ABC123." in text("stream-text"), "the streamed answer")
            until(lambda: any(r[0] == "message" and r[2] == "yes" and "Refunded ABC123." in r[3] for r in rows("events")),
                  "the message answered")
            assert any(r[0] == "approve" and r[2] == "yes" for r in rows("events")), rows("events")
            browser.save_screenshot(str(tmp_path / "inspector-agent.png"))

            Select(browser.find_element(By.ID, "send-event")).select_by_visible_text("message")
            until(lambda: "payload schema" in text("send-schema"), "the message payload's schema")
            browser.find_element(By.ID, "send-payload").send_keys('{"txt": 1}')
            browser.find_element(By.ID, "send").click()
            until(lambda: text("send-result").startswith("refused:") and "text" in text("send-result"),
                  "the bad payload refused with the reason")
            Select(browser.find_element(By.ID, "send-event")).select_by_visible_text("close")
            browser.find_element(By.ID, "send-payload").clear()
            browser.find_element(By.ID, "send").click()
            until(lambda: text("agent-status") == "completed", "the session closed")

            browser.find_element(By.ID, "tab-letters").click()
            until(lambda: any(r[1] == "desk-other" and r[2].startswith("unknown_event") for r in rows("letters")),
                  "the dead letter listed")

        try:
            await asyncio.to_thread(inspect)
        finally:
            shot = tmp_path / "inspector.png"
            await asyncio.to_thread(browser.save_screenshot, str(shot))
            kept = os.environ.get("AGENTSTREAM_TEST_ARTIFACTS")
            shots = [shot, *([tmp_path / "inspector-agent.png"] if (tmp_path / "inspector-agent.png").exists() else [])]
            if kept:
                Path(kept).mkdir(parents=True, exist_ok=True)
                for taken in shots:
                    shutil.copy(taken, Path(kept) / taken.name)
            print("screenshots:", *shots)
    assert [json.loads(line)["confirmation"] for line in refunds.read_text().splitlines()] == ["ABC123"]
