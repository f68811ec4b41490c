document.title = "Static files";
