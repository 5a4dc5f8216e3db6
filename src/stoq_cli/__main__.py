"""``python -m stoq_cli``: the ``stoq`` command run by a chosen interpreter."""

from stoq_cli.main import main

if __name__ == "__main__":
    main()
