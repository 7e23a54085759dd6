"""What providers say of progress is shown on the job: `progress` (0..100 or null) and `eta_s`."""

from __future__ import annotations

from tests.integration.conftest import Stack
from tests.integration.test_kinds import post


def test_a_jobs_estimate_shows_at_once_and_it_is_first_polled_when_expected_done(stack: Stack) -> None:
    # Given evolink (the cheapest for image-to-video) taking 100 s over a task, its callback lost
    stack.emulator.set_faults("evolink", latency_s=100, drop_callbacks=True)
    response = post(stack, "image_to_video")
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]

    # When it is sent, the provider's own estimate shows at once
    stack.sandbox.deliver_submissions()
    sent = stack.job(job_id)
    assert (sent["status"], sent["provider"], sent["eta_s"]) == ("SUBMITTED", "evolink", 100)

    def queries() -> int:
        return sum(1 for r in stack.emulator.requests if r[0] == "evolink" and r[1] == "GET")

    # And half-way nobody asks the provider: its callback is the news until it expects to be done
    asked = queries()
    stack.clock.advance(50)
    stack.sandbox.sweep()
    assert (stack.job(job_id)["status"], queries()) == ("SUBMITTED", asked)

    # Then past the expected finish (and the callback's retries) one poll finds it done, and
    # the job says 100 and nothing left
    stack.clock.advance(111)
    stack.sandbox.sweep()
    stack.sandbox.drain_archive()
    done = stack.job(job_id)
    assert queries() > asked
    assert (done["status"], done["progress"], done["eta_s"]) == ("ARCHIVED", 100, 0)


def test_a_job_whose_provider_says_nothing_of_progress_shows_null(stack: Stack) -> None:
    response = post(stack, "text_to_video")  # gateway: no progress, no estimate
    stack.sandbox.deliver_submissions()

    job = stack.job(response.json()["job_id"])
    assert (job["provider"], job["progress"], job["eta_s"]) == ("gateway", None, None)


def test_an_element_job_shows_its_ten_minute_estimate_from_the_start(stack: Stack) -> None:
    # Given an element request (evolink answers evolink's Kling 3.0 pages' estimated_time, 600 s)
    response = post(stack, "custom_element")
    stack.sandbox.deliver_submissions()

    job = stack.job(response.json()["job_id"])
    assert (job["status"], job["provider"], job["eta_s"]) == ("SUBMITTED", "evolink", 600)
