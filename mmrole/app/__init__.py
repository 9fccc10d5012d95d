"""The web app (`python app.py`): a chat page to talk with a character about an image, and an evaluation browser.

profiles.py (characters of a profiles folder, written profiles), conversation.py (a chat as the instruction sample and
request inference builds), uploads.py (checked uploads), replies.py (streamed replies: the serve engine or an
endpoint), evaluation.py (an evaluation folder, read), chat_page.py and browser_page.py (the pages' logic), web.py
(the Gradio wiring), cli.py (the command line)."""
