"""``python -m charlm`` runs the command line."""
from charlm.entry import main

if __name__ == "__main__":
    main()
