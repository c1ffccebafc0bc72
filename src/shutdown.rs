//! Graceful shutdown: broadcast + drop guard.
