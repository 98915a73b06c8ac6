"""`prep export --source stac`: the local recipe on scenes found through public STAC APIs."""
