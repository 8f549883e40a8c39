"""Code that runs inside the long-lived MPI ranks (started by ``mpirun``): serving and training."""
