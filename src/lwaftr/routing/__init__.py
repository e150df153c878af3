"""Routing daemons the lwAFTR configures and runs beside its workers (BGP by BIRD 2)."""
