from core.commands.cli import app

app(prog_name="python -m core")
