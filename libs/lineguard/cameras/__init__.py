"""Camera drivers the CLI and capture's camera kinds share (the library never imports a service): `aravis`
for GigE Vision / GenICam cameras."""
