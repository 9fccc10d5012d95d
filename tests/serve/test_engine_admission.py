"""The engine admits the jobs that wait together as one group: their prompts are prefilled in shared forwards and a
prefix one of them holds (a long system prompt) is copied into the others, and every answer equals its
one-at-a-time chat()."""

from mmrole.backends.base import ChatRequest, GenerationParams
from mmrole.serve.api import serving_context
from mmrole.serve.engine import ChatEngine, Job

from tests.support.serve import MAX_TOKENS, backend, expected_chat, tiny  # noqa: F401  (fixtures)


def test_waiting_jobs_are_prefilled_together_and_share_their_system_prompt(backend, tiny):  # noqa: F811
    _, model, tokenizer = tiny
    system = "You are Hermione Granger, and you answer as she would. " * 6
    queries = [f"Question {i}: what is the magic number {i * 7}?" for i in range(5)]
    engine = ChatEngine(backend, max_batch_size=8)
    jobs = []
    for query in queries:  # all wait before the scheduler starts: one admission
        request = ChatRequest.single(query, system=system)
        ids = serving_context(tokenizer, request, model.generation_config.max_window_size)
        jobs.append(engine.submit(Job(request, GenerationParams(greedy=True, max_new_tokens=MAX_TOKENS), tuple(ids))))
    prefills = []
    hook = model.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: prefills.append(len(kwargs["inputs_embeds"]))
        if kwargs.get("inputs_embeds") is not None else None, with_kwargs=True)
    try:
        engine.start()
        for job in jobs:
            assert job.done.wait(120) and job.error is None, job.error
    finally:
        engine.close()
        hook.remove()
    assert [job.result.text for job in jobs] == [expected_chat(tiny, query, system=system) for query in queries]
    # The first prompt is computed whole; the other four copy its system prompt and compute their rests in one forward.
    assert prefills == [1, 4]
