"""Decoding with Qwen-VL-Chat: the one engine every caller (chat, inference, review, the server) decodes with.

- chat.py: the original chat API (`chat`, `chat_stream`), `batch_chat` for many chats at once, `prepare_chat` for a
  caller that drives the decoding batch itself, and the stop-word rule of chatml;
- continuous.py: continuous batching (`DecodingBatch`, `generate_greedy`): rows leave the batch when they end and
  waiting requests take their place.

Nothing here imports the model (modeling_qwen): the model's chat methods call into chat.py, as a transformers model
calls into transformers' generation utilities. Import the submodules themselves (this package re-exports nothing,
so `generation.chat` is always the module).
"""
