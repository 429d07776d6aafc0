"""The operator dashboard (docs/dashboard.md): server-rendered pages on the query API's app, live over a side
subscription, signed in with the API's tokens."""
