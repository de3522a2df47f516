"""The pure decision core: judge, region state machine, guards and the traffic-matrix planner."""
