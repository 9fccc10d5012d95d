"""The OpenAI-compatible server over a local Qwen-VL checkpoint (serve.py, `python -m mmrole.serve`).

- server.py: the FastAPI application on uvicorn, its command line, start-up and shutdown
- api.py: the OpenAI chat-completions protocol: request validation (client text is never markup, images only as
  pixels), generation settings, response bodies
- engine.py: the scheduler that decodes concurrent requests together on the one engine (continuous batching)
- http.py: the connection layer: uvicorn's HTTP/1.1 server with connection caps and deadlines
"""
