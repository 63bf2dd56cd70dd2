"""`python -m tflq`: the `tflq` command."""
from tflq._entry import main

main()
