from app.auth.routes import bp

__all__ = ["bp"]
