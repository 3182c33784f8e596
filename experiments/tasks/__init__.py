"""Task code of the studies (data, models, training loops), kept apart from their declarative study modules."""
