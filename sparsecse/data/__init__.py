"""Training corpora: reading and checking their lines, fetching them (the Hub dataset or a plain
folder), and a resumable, sharded epoch order."""
