"""The ground floor: helpers that import nothing from models/, datasets/ or the entry points."""
