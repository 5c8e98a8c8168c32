from app.main.routes import bp

__all__ = ["bp"]
