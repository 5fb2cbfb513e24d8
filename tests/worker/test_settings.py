"""The worker's model list: names become Redis queue names, so they are kept plain."""

from __future__ import annotations

import pytest

from contract.jobs import JobKind
from contract.keys import queue_name
from worker.settings import parse_models


def test_models_parse_as_name_path_pairs() -> None:
    got = parse_models(" a=models/a , b.v2=org/b-model ")
    assert got == {"a": "models/a", "b.v2": "org/b-model"}


@pytest.mark.parametrize("value", ["", "a", "=x", "a=", "a:fits=models/a", "a b=models/a"])
def test_bad_model_lists_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="models"):
        parse_models(value)


def test_edits_and_fits_of_a_model_have_their_own_queues() -> None:
    assert queue_name("shapes32") == queue_name("shapes32", JobKind.EDIT) == "editserve:shapes32"
    assert queue_name("shapes32", JobKind.FIT) == "editserve:shapes32:fits"
