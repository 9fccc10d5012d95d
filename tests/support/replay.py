"""A Backend that replays published answers or reviews, and answers files with real (tiny) images: evaluation
without a model (tests/eval/test_answer.py, test_review.py, test_rm_data.py)."""

import json

from mmrole.backends.base import Backend, BackendError, ChatResult


class ReplayJudge(Backend):
    """Answers judge requests from a table {(sample id, metric, order): reply or callable(attempt)}."""

    name = "replay"

    def __init__(self, replies, fail_after=None, model="replayed"):
        self.replies = replies
        self.requests = []  # (request, params) as received
        self.fail_after = fail_after  # simulate a kill after this many results
        self.model = model

    def identity(self):
        return {"backend": self.name, "model": self.model}

    def generate_iter(self, requests, params):
        for index, request in enumerate(requests):
            if self.fail_after is not None and len(self.requests) >= self.fail_after:
                raise KeyboardInterrupt("simulated kill")
            self.requests.append((request, params))
            reply = self.replies.get(request.key)
            if callable(reply):
                reply = reply(sum(r.key == request.key for r, _ in self.requests))
            if reply is None or isinstance(reply, BackendError):
                yield index, BackendError("HTTP 500 after 3 attempts", key=request.key)
            else:
                yield index, ChatResult(text=reply)


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (200, 100, 50)).save(buffer, format="PNG")
    return buffer.getvalue()


TINY_PNG = _tiny_png()


def answers_with_images(tmp_path, mmrole_reference, model, name, n=None, mutate=None):
    """Answers file (first n samples) + placeholder images; returns (answers dir, image dir)."""
    answers = json.loads((mmrole_reference / "in-test_answers" / model / name).read_text(encoding="utf-8"))[:n]
    if mutate:
        mutate(answers)
    answers_dir, image_dir = tmp_path / "answers", tmp_path / "images"
    answers_dir.mkdir(exist_ok=True)
    (answers_dir / name).write_text(json.dumps(answers, ensure_ascii=False, indent=4), encoding="utf-8")
    for sample in answers:
        if isinstance(sample, dict) and "image" in sample:
            path = image_dir / sample["image"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(TINY_PNG)  # a real image: images are checked before any request
    return answers_dir, image_dir
