"""``python -m charlm`` runs the command line."""
from charlm.cli import main

if __name__ == "__main__":
    main(prog_name="charlm")
