"""The ``charlm`` executable: Ctrl-C while the command line is still loading is a quiet exit."""
import sys


def main() -> None:
    try:
        from .cli import main as command_line
    except KeyboardInterrupt:  # before the command's own handling exists: no traceback either
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    command_line(prog_name="charlm")


if __name__ == "__main__":
    main()
