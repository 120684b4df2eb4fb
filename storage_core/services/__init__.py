"""Services: the business rules, free of Flask; each receives its collaborators in __init__."""
