"""schemathesis against the app's OpenAPI schema: requests generated from it (valid and invalid ones) never get a
5xx. (Its pytest plugin does not run under pytest 9, so each operation's Hypothesis strategy is driven here.)"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from longvec.api.app import create_app
from longvec.index import Collection, Document

from fakes import WordHashEmbedder

EXAMPLES = 30  # per operation


def test_no_generated_request_gets_a_server_error(tmp_path, tokenizer) -> None:
    collection = Collection.create(tmp_path / "c", embedder=WordHashEmbedder(tokenizer, max_tokens=64))
    collection.add([Document(f"d{i}", f"parse socket cache {i} render") for i in range(20)])
    app = create_app(collection, close_on_shutdown=False)  # from_asgi runs no lifespan: closed below
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /search", "POST /documents", "POST /v1/embeddings", "GET /v1/models", "GET /readyz"} <= labels
    statuses: dict[str, set[int]] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def run(case) -> None:
            response = case.call_and_validate(checks=[not_a_server_error])
            statuses.setdefault(case.operation.label, set()).add(response.status_code)

        run()
    app.state.longvec.close(True)  # the model worker stops, the collection closes
    assert all(code < 500 for codes in statuses.values() for code in codes), statuses
    assert 200 in statuses["POST /search"] and 422 in statuses["POST /search"]  # valid and invalid cases both ran
