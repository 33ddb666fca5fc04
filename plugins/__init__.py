"""xleval's bundled plugins, one module per kind.

They load through the ``xleval`` entry-point group exactly like a third-party
package's plugins; the core never imports this package.
"""
