"""The export recipe on Earth Engine: graphs built by pure functions (`recipe`) and sent by one
network boundary (`client`), with cell downloads, batch tasks and their bookkeeping
(`runner`)."""
