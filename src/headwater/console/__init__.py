"""The web console: server-rendered pages behind a login with the admin token."""
