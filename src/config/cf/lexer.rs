//! Physical lines → logical lines: continuation, comments, blank lines. (Lands with the reader.)
