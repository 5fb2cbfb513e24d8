"""GET /v1/jobs/{id}, its outputs and cancel, with the queue faked."""

from __future__ import annotations

from fastapi.testclient import TestClient

from contract.jobs import JobKind, JobPayload, JobStatus
from tests.service.routes.conftest import FakeQueue


def _job(queue: FakeQueue, status: JobStatus, **meta: object) -> str:
    payload = JobPayload(id=f"j{len(queue.jobs)}", kind=JobKind.EDIT, model="shapes32",
                         method="reconstruct")  # fmt: skip
    job = queue.submit(payload)
    job.status, job.meta = status, dict(meta)
    return payload.id


def test_a_succeeded_job_links_its_outputs(routes: tuple[TestClient, FakeQueue]) -> None:
    client, queue = routes
    result = {"outputs": ["a" * 64, "b" * 64], "metrics": {"psnr_db": 40.0}}
    job_id = _job(queue, JobStatus.SUCCEEDED, result=result)
    view = client.get(f"/v1/jobs/{job_id}").json()
    assert view["status"] == "succeeded"
    assert view["output_links"] == [f"/v1/jobs/{job_id}/outputs/0", f"/v1/jobs/{job_id}/outputs/1"]
    assert view["metrics"]["psnr_db"] == 40.0 and "owner" not in view


def test_an_unknown_job_is_a_404_naming_the_id(routes: tuple[TestClient, FakeQueue]) -> None:
    client, _ = routes
    r = client.get("/v1/jobs/nope")
    assert r.status_code == 404 and r.json()["error"]["field"] == "id"


def test_cancel_a_queued_job_and_not_a_final_one(routes: tuple[TestClient, FakeQueue]) -> None:
    client, queue = routes
    queued = _job(queue, JobStatus.QUEUED)
    r = client.post(f"/v1/jobs/{queued}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "canceled", r.text
    assert queue.jobs[queued].status is JobStatus.CANCELED
    done = _job(queue, JobStatus.SUCCEEDED)
    r = client.post(f"/v1/jobs/{done}/cancel")
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_final"


def test_the_listing_pages_the_queues_jobs(routes: tuple[TestClient, FakeQueue]) -> None:
    client, queue = routes
    ids = [_job(queue, JobStatus.QUEUED) for _ in range(3)]
    page = client.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["jobs"]] == ids[:2]
