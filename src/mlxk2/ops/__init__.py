"""Operations: one module per command, returning plain data and never printing."""
