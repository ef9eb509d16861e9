"""CosmoDM-Ops."""
