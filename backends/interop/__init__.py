"""Conversions between the circuit model and other frameworks (Qiskit, Cirq, OpenQASM 3)."""
