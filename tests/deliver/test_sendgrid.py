"""The SendGrid transport against a real local HTTP server that validates every request."""

import math
from datetime import datetime

import pytest

from digest.deliver.sender import batches
from digest.deliver.sendgrid import SendGridTransport, mail_body
from digest.errors import TransportUnavailable
from tests.deliver.builders import content, message
from tests.deliver.sendgrid_server import Script, mail_send_validator, sendgrid_server
from tests.world import World

WALL = 1_800_000_000.0  # a fixed Unix time for X-RateLimit-Reset arithmetic


def transport(url: str, sleeps: list[float], **kwargs: float) -> SendGridTransport:
    return SendGridTransport(
        "SG.test-key",
        host=url,
        sleep=sleeps.append,
        wall_clock=lambda: WALL,
        **kwargs,  # type: ignore[arg-type]
    )


def readers(count: int) -> list:  # type: ignore[type-arg]
    shared = content()
    return [message(i, of=shared) for i in range(1, count + 1)]


@pytest.mark.parametrize("count", [1, 1000, 1001, 2500])
def test_calls_for_n_recipients_is_ceil_n_over_1000(count: int) -> None:
    script = Script()
    sleeps: list[float] = []
    with sendgrid_server(script) as url:
        t = transport(url, sleeps)
        results = [r for call in batches(readers(count), t.max_batch) for r in t.send(call)]
    assert script.violations == []
    assert len(script.requests) == math.ceil(count / 1000)
    assert next(len(r["personalizations"]) for r in script.requests) == min(count, 1000)
    assert len(results) == count
    assert all(r.ok and r.provider_id == "sg-msg-1" for r in results)
    assert sleeps == []


def test_each_personalization_has_its_own_headers_args_and_values() -> None:
    script = Script()
    with sendgrid_server(script) as url:
        t = transport(url, [])
        t.send(readers(3))
    [body] = script.requests
    assert script.headers[0]["Authorization"] == "Bearer SG.test-key"
    assert body["tracking_settings"] == {"subscription_tracking": {"enable": False}}
    assert body["headers"] == {"List-Id": "Daily Digest <daily-digest.digest.example>"}
    assert body["reply_to"] == {"email": "editor@digest.example"}
    p = body["personalizations"][1]
    m = message(2)
    assert p["to"] == [{"email": "reader2@example.com", "name": "Ana"}]
    assert p["headers"] == {
        "List-Unsubscribe": m.list_unsubscribe,
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Message-ID": m.message_id,
    }
    assert p["custom_args"] == {"digest_edition": "7", "digest_subscriber": "102", "digest_delivery": "2"}
    # Substituting the values into the content gives exactly the reader's parts.
    text, html = (c["value"] for c in body["content"])
    for tag, value in p["substitutions"].items():
        text, html = text.replace(tag, value), html.replace(tag, value)
    assert (text, html) == (m.text, m.html)


def test_a_429_waits_for_the_rate_limit_reset_then_succeeds() -> None:
    script = Script(answers=[(429, {"X-RateLimit-Reset": str(int(WALL) + 7)})])
    sleeps: list[float] = []
    with sendgrid_server(script) as url:
        results = transport(url, sleeps).send(readers(2))
    assert all(r.ok for r in results)
    assert sleeps == [7.0]
    assert len(script.requests) == 2


def test_a_500_is_retried_with_jittered_backoff() -> None:
    script = Script(answers=[(500, {}), (503, {})])
    sleeps: list[float] = []
    with sendgrid_server(script) as url:
        results = transport(url, sleeps).send(readers(2))
    assert all(r.ok for r in results)
    assert len(sleeps) == 2
    assert 1.0 <= sleeps[0] <= 3.0
    assert 2.0 <= sleeps[1] <= 6.0


def test_a_refused_key_stops_the_send_without_failing_the_readers() -> None:
    # issue 12: a 401 used to mark every reader of the request failed for good
    script = Script(answers=[(401, {})])
    sleeps: list[float] = []
    with sendgrid_server(script) as url, pytest.raises(TransportUnavailable) as caught:
        transport(url, sleeps).send(readers(2))
    assert str(caught.value) == (
        f"SendGrid {url}: configuration error: the API key was refused (check SENDGRID_API_KEY): "
        "SendGrid HTTP 401: HTTP 401"
    )
    assert len(script.requests) == 1
    assert sleeps == []


def test_5xx_until_the_attempts_run_out_is_transient() -> None:
    script = Script(answers=[(500, {})] * 3)
    with sendgrid_server(script) as url:
        results = transport(url, [], attempts=3).send(readers(1))
    assert not results[0].ok
    assert not results[0].permanent
    assert results[0].error == "SendGrid HTTP 500: HTTP 500 (after 3 attempts)"


def test_a_server_that_does_not_answer_in_time_is_retried() -> None:
    import socket

    with socket.socket() as s:  # listening, never accepting: the request times out
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        results = transport(url, [], attempts=2, timeout=0.2).send(readers(1))
    assert not results[0].ok
    assert "after 2 attempts" in (results[0].error or "")


def test_an_unreachable_host_raises_transport_unavailable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(TransportUnavailable) as caught:
            transport(url, [], attempts=2).send(readers(1))
    # One line in plain words, with the setting to check (issue 14), not "[Errno 111] ...".
    assert str(caught.value) == (
        f"SendGrid {url} unreachable: connection refused: nothing listens there (check DIGEST_SENDGRID_HOST)"
    )


def test_the_validator_rejects_what_sendgrid_rejects(now: datetime) -> None:
    body = mail_body(readers(1))
    validator = mail_send_validator()
    assert list(validator.iter_errors(body)) == []
    too_many = {**body, "personalizations": body["personalizations"] * 1001}
    assert any("1001" in str(e.message) or "long" in e.message for e in validator.iter_errors(too_many))
    assert list(validator.iter_errors({**body, "from": {"name": "x"}}))


def test_a_whole_edition_through_send_edition_is_one_request_per_copy(world: World) -> None:
    script = Script()
    with sendgrid_server(script) as url:
        report = world.send(transport(url, []))
    assert script.violations == []
    assert report.sent == 12
    assert len(script.requests) == 1  # twelve readers of one copy: one call
    [body] = script.requests
    assert sorted(p["to"][0]["email"] for p in body["personalizations"]) == world.emails
    assert len({p["headers"]["List-Unsubscribe"] for p in body["personalizations"]}) == 12
    again = Script()
    with sendgrid_server(again) as url:
        assert world.send(transport(url, [])).sent == 0
    assert again.requests == []
