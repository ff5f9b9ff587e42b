"""The GPU evidence runner behind ``scripts/evidence.py`` (issues 12 and 17), in parts:

    context     the call's context, a part, a stage, bounded commands
    stages      every stage and its parts; parts/  each stage's run, progress and report functions
    plan        the lease order, measured and compile-aware estimates, what fits
    preflight   what the machine is and whether the lease's work runs on it
    runner      running a part: isolated, measured as it goes, timed for the planner
    transport   export to $OUT and import here: results, and unfinished parts' state
    report      the stage tables and RESULTS.md
    smoke_data  the tiny data sets of --smoke
"""
