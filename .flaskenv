FLASK_APP=blog.py
