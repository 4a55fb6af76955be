"""A stand-in for a search process (tests/test_tune.py): `worker1` fails at once, the others
wait, as a chief serving the oracle and a worker inside a long trial would."""

import os
import sys
import time

if __name__ == "__main__":
  name = os.environ["KERASTUNER_TUNER_ID"]
  print(f"{name} up, args {' '.join(sys.argv[1:])}", flush=True)
  if name == "worker1":
    sys.exit(3)
  time.sleep(120)
