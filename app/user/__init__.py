from app.user.routes import bp

__all__ = ["bp"]
