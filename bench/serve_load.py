"""Requests per second of the server under N concurrent clients vs the same requests one at a time, one run.

A tiny Qwen-VL checkpoint (random weights, the real vocabulary) is served in this process (mmrole.serve on
uvicorn, continuous batching with --batch_size rows); clients are threads using the stock `openai`
client. The requests mix max_tokens (--max_new_tokens, cycled), some carry an image (every --image_every-th),
some stream (every --stream_every-th); all are greedy, so every concurrent answer must equal its serial
answer (the script checks it and exits 1 otherwise). First every request is sent one at a time, then
--clients clients send them concurrently, each its share in turn. Printed: wall time, requests/s and
their ratio, p50/p99 latency of each run, and the engine's counts for the concurrent run: decoding steps,
rows per step, and steps whose rows had different max_tokens (requests with different max_tokens sharing
the decoding batch). The tiny model never writes an end token by itself, so every answer runs to its
max_tokens. A benchmark, not a test (timings depend on the machine and its load).

    python bench/serve_load.py [--clients 32] [--requests 64] [--batch_size 8] [--max_new_tokens 8 16 32 64]
"""
import argparse
import base64
import io
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from mmrole.common.cli import add_hidden_alias


def request_kwargs(index: int, args, images):
    """The index-th request: its own text, a max_tokens from the cycle, an image or a stream now and then."""
    text = f"Client request {index}: tell me about the picture or the number {index * 7}."
    content = text
    if index % args.image_every == 0:
        content = [{"type": "image_url", "image_url": {"url": images[index % len(images)]}},
                   {"type": "text", "text": text}]
    return dict(temperature=0, max_tokens=args.max_new_tokens[index % len(args.max_new_tokens)],
                stream=index % args.stream_every == 1,
                messages=[{"role": "system", "content": f"You are character {index % 5}."},
                          {"role": "user", "content": content}])


def ask(base_url: str, model: str, kwargs) -> tuple:
    """(answer text, seconds) of one request."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)
    started = time.perf_counter()
    response = client.chat.completions.create(model=model, **kwargs)
    if kwargs["stream"]:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in response if chunk.choices)
    else:
        text = response.choices[0].message.content
    return text, time.perf_counter() - started


def run(base_url: str, model: str, requests, clients: int) -> tuple:
    """(answers in request order, latencies, wall seconds) with `clients` clients, each sending every
    clients-th request in turn."""
    answers, latencies = [None] * len(requests), [0.0] * len(requests)

    def client(first: int) -> None:
        for index in range(first, len(requests), clients):
            answers[index], latencies[index] = ask(base_url, model, requests[index])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return answers, latencies, time.perf_counter() - started


def percentile(values, fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def png_data_urls(count: int):
    from PIL import Image

    urls = []
    for k in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (64 + 8 * k, 48), (40 * k % 256, 200 - 30 * k, 90)).save(buffer, "PNG")
        urls.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    return urls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--requests", type=int, default=64, help="requests in each run (default 64)")
    parser.add_argument("--batch_size", type=int, default=8, help="the server's rows per step (default 8)")
    add_hidden_alias(parser, "--max_batch_size", of="--batch_size")
    parser.add_argument("--max_new_tokens", type=int, nargs="+", default=[8, 16, 32, 64],
                        help="the requests' max_tokens, cycled over the requests (default 8 16 32 64)")
    add_hidden_alias(parser, "--max_tokens", of="--max_new_tokens")
    parser.add_argument("--image_every", type=int, default=4, help="every n-th request carries an image (default 4)")
    parser.add_argument("--stream_every", type=int, default=3, help="every n-th request streams (default 3)")
    args = parser.parse_args(argv)
    if min(args.clients, args.requests, args.batch_size, args.image_every, args.stream_every, *args.max_new_tokens) < 1:
        parser.error("every count must be at least 1")

    import torch

    from mmrole.backends.hf import HFBackend
    from mmrole.qwen_vl.loading import load_model_and_tokenizer
    from mmrole.serve.server import start_server
    from mmrole.serve.api import ServeConfig
    from mmrole.demo.tiny import write_tiny_checkpoint

    with tempfile.TemporaryDirectory(prefix="serve-load-") as folder:
        write_tiny_checkpoint(folder, seed=0)
        model, tokenizer = load_model_and_tokenizer(folder, device="cpu")
    requests = [request_kwargs(index, args, png_data_urls(3)) for index in range(args.requests)]
    name = "tiny"
    with start_server(HFBackend(model=model, tokenizer=tokenizer), ServeConfig(model_name=name), port=0,
                      max_batch_size=args.batch_size, max_queue=max(256, args.requests)) as server:
        ask(server.base_url, name, requests[0])  # warm-up
        serial, serial_latency, serial_time = run(server.base_url, name, requests, 1)
        stats = server.app.engine.stats
        before = dict(stats)
        concurrent, concurrent_latency, concurrent_time = run(server.base_url, name, requests, args.clients)
        counts = {key: stats[key] - before[key] for key in ("decode_steps", "decode_rows", "mixed_budget_steps")}
        largest, most_budgets = stats["largest_batch"], stats["most_budgets_in_a_step"]

    equal = sum(a == b for a, b in zip(serial, concurrent))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.requests} requests, max_tokens "
          f"{args.max_new_tokens} cycled, every {args.image_every}th with an image, every {args.stream_every}rd "
          f"streamed; server --batch_size {args.batch_size}")
    print(f"{'run':<22}{'wall s':>9}{'req/s':>9}{'p50 s':>9}{'p99 s':>9}")
    for label, latency, wall in (("one at a time", serial_latency, serial_time),
                                 (f"{args.clients} clients", concurrent_latency, concurrent_time)):
        print(f"{label:<22}{wall:>9.2f}{len(requests) / wall:>9.2f}{statistics.median(latency):>9.2f}"
              f"{percentile(latency, 0.99):>9.2f}")
    print(f"requests/s ratio: {serial_time / concurrent_time:.2f}x; greedy answers equal to the serial ones: "
          f"{equal}/{len(requests)}")
    print(f"concurrent run: {counts['decode_steps']} decoding steps, {counts['decode_rows'] / counts['decode_steps']:.2f} "
          f"rows per step (largest {largest}), {counts['mixed_budget_steps']} steps "
          f"({counts['mixed_budget_steps'] / counts['decode_steps']:.0%}) with rows of different max_tokens "
          f"(up to {most_budgets} values in one step)")
    return 0 if equal == len(requests) else 1


if __name__ == "__main__":
    sys.exit(main())
