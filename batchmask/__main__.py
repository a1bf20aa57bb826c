"""`python -m batchmask` and the `batchmask` script. The CLI is imported inside `main`: worker
processes (started with `spawn`) import the script that started the driver, and need not pay
for Typer and Rich."""


def main() -> None:
    from .cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
